"""Review: stale long-registered products, and the decisions merchandisers record about them."""

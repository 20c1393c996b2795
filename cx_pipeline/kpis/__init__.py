"""KPIs: the inquiries this product exists to reduce, per 1,000 orders and week."""

"""Sources of the feeds besides the bundled REST shape (a folder of export files, vendors' APIs)."""

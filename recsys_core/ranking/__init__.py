"""The place model that is measured and served: parts, their blend, its tuning and its serving form."""

"""Data: built-in synthetic datasets, datalist builders for public layouts, multi-domain composition."""

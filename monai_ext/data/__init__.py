"""Data: built-in synthetic datasets, datalist builders for public layouts, multi-domain composition."""

from . import abdomenatlas_classes, builtin, datalists, multidomain, synthetic

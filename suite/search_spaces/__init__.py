"""The shipped search spaces (``<name>.yaml``), installed with the package and read through
``importlib.resources`` (``suite.spaces``); this folder is where users look for and add them."""

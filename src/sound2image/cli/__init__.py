"""The ``sound2image`` command line. The library never imports this package."""

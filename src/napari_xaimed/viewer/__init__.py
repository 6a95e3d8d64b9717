"""The napari side: widgets, the reader and writer, sample data as layers and the layer tuples.

The only package that imports napari, Qt (through qtpy) or magicgui; the core packages never
import it.
"""

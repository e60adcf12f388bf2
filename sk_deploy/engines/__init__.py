"""TensorRT engines: building them from a bundle's graphs, and telling whether one can run here."""

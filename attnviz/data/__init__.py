"""Data layer: decoding images, the procedural scene benchmark and its cache, user data sets, example files."""

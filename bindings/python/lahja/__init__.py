"""lahja, the lahja 0.17 API on liblahja; lahja._core is its C extension."""

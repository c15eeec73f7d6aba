/* The wire codec: see wire.h. */

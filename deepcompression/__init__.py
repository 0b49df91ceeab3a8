"""deepcompression."""

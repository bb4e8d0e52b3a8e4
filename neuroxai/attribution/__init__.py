"""attribution layer."""

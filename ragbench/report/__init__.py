"""Reading stored runs back: comparing runs with paired tests, and the CI regression gate."""

"""Files in and out: chapters and images (allowlisted decoding), safe weight-file reading, atomic writes, locks, exports, the demo chapter."""

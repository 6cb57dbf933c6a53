"""Files in and out: chapters and images, atomic writes, exports."""

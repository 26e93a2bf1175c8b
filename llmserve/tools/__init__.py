"""What runs beside the model, never inside the image: scripts/, evaluation, load test, benchmark, publishing."""

"""Finding faces and following them: detection and alignment, image quality checks, tracking between frames."""

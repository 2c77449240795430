"""Reading and writing: images and enrolment folders, frame sources, the one store for every file written, display."""

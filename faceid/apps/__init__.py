"""What users run: live identification, enrolment (capture, selfies), the enrolment audit, erasure, and the
clustering of faces nobody enrolled into folders a person can name (clustering.py)."""

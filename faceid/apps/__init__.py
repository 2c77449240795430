"""What users run: live identification, enrolment (capture, selfies) and the enrolment audit."""

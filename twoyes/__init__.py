"""twoyes: after every session, coach and client each decide whether another is useful."""

"""The mail wing: rendering and sending what the outbox holds."""

"""gunicorn settings for twoyes, read by gunicorn from the working directory.

Start: .venv/bin/gunicorn "app:create_app()" (see README, Production). The
access log keeps method, path, status and time, with each token in a path
replaced by an ellipsis.
"""

from gunicorn.glogging import Logger

from twoyes.logs import hide_tokens

bind = "127.0.0.1:8000"
workers = 2
accesslog = "-"
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms'


class TokenlessLogger(Logger):
    """gunicorn's logger, with the tokens taken out of every request line."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U"):
            if isinstance(atoms.get(key), str):
                atoms[key] = hide_tokens(atoms[key])
        return atoms


logger_class = TokenlessLogger

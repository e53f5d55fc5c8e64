"""The one error type users see: a one-line message naming the bad value and what is allowed."""


class UserError(Exception):
    """Bad input from a user (config, CLI, data dir). The CLI prints `error: <msg>` and exits 2.

    Example:
      >>> raise UserError("model 'foo' is unknown; allowed: mlp, plain_cnn, resnet")
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: model 'foo' is unknown; allowed: mlp, plain_cnn, resnet
    """

    exit_code = 2

"""Exceptions and warnings a user of bayes_gmm can catch."""


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted estimator was called before ``fit``.

    Subclasses ValueError and AttributeError, as scikit-learn's does, so code written
    for scikit-learn estimators catches it.
    """


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the log posterior settled to within ``tol``."""

"""The duality experiment (``infospec demo``): does flattening a spectrum compress the signal?

Seed 001 of this project claims: "flatten the spectrum and you compress the signal;
compress the signal and you flatten its spectrum". :func:`run_demo` tests it on
scikit-learn's digits with four training methods and a continual-learning check, and
writes a CSV, a JSON summary, figures and a self-contained HTML report whose reading is
generated from the measured numbers.
"""

from .experiment import METHODS, DemoConfig, load_digits_split
from .runner import DemoResult, run_demo

__all__ = ["METHODS", "DemoConfig", "DemoResult", "load_digits_split", "run_demo"]

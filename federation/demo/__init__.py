"""`fedseg demo`: a real federation of one site per modality on demo phantoms, scored against baselines."""

from federation.demo.report import DemoReport
from federation.demo.run import run_demo
from federation.demo.settings import SITE_NAMES, DemoSettings

__all__ = ["SITE_NAMES", "DemoReport", "DemoSettings", "run_demo"]

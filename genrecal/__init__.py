"""genrecal: GenRecal distillation across VLM families, and edge export of the student."""
__version__ = "0.1.0"

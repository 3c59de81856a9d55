"""Kubeflow Pipelines for the homelab coding model.

:mod:`.components` holds the lightweight KFP components, :mod:`.pipeline` chains them into the
fine-tuning pipeline and :mod:`.storage` addresses their inputs and outputs in the object store.
"""

__version__ = "0.1.0"

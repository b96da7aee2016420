"""syncd: a GitOps sync daemon for AWS CloudFormation."""

__version__ = "0.1.0"

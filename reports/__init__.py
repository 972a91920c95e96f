"""posture's reports stage: the HTML report (and, next, the plans and exports) from the inventory and findings.

It registers its commands through the `posture.commands` entry point, so the scanner never imports it.
"""

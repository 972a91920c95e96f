"""posture's reports stage: HTML, plans and exports built from the inventory and findings.

Empty until the reports issue lands; it will register its commands through the `posture.commands`
entry point, so the scanner never imports it.
"""

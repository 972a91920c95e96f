"""posture's rules stage: lifecycle catalogue, identification and the protect/detect/respond rule packs.

It reads the scanner's inventory and writes findings; it never imports `reports`. Empty until the rules
issue lands: its commands will register with the root group through the `posture.commands` entry point.
"""

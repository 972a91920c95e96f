"""The application layer: what uses all three stages at once (scanner → rules → reports).

A scheduled job (scan, evaluate, report, change hook), `posture run`, `posture schedule` and the demo
live here, and only here: each stage is a library (`scanner.scan`, `rules.stage`, `reports.stage`) that
knows nothing of the stages after it, and their click commands are thin layers over those libraries.
The commands of this package join the root command through the `posture.commands` entry point, as the
rules' and the reports' do.
"""

"""The campaign: its file (config), the controller, the journal, the trial table, warm start."""

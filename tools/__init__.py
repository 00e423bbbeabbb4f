"""Commands around the method: text generation (generate), bits per character of any model
on any text (score), and the demo's report (report). Run them through redwhale.py
(`python redwhale.py generate ...`) or as files (`python tools/generate.py ...`)."""

"""What every command shares: flag checks and one-line errors (cli), the output guard and
whole-file, whole-folder writes (outputs), and the safetensors format (safetensors_io)."""

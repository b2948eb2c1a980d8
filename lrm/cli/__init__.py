"""The `lrm` command: one subcommand per pipeline stage (thin mains; logic lives in lrm.*)."""

"""CLI commands of each feature, registered in llmlab_grpc.cli.FEATURE_COMMANDS."""

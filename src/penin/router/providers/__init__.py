"""Provider adapters: one module per wire protocol behind the ``base`` interface."""

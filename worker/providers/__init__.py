"""Provider adapters, one module per provider, behind ``worker.providers.base.Provider``."""

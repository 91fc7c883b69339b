from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers, credentials and collections"

    def ready(self) -> None:
        from django.core import checks

        from .vault import check_encryption_keys

        checks.register(check_encryption_keys, checks.Tags.security)

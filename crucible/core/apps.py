from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "crucible.core"
    label = "core"
    verbose_name = "Crucible core"

    def ready(self) -> None:
        # Bind shared tasks to Crucible's Celery app in every process that loads Django.
        from crucible import celery_app  # noqa: F401

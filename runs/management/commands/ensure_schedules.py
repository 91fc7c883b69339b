from django.core.management.base import BaseCommand

from runs.tasks import ensure_schedules


class Command(BaseCommand):
    help = "Create the engine's django-q2 schedules (the lease reaper). Safe to run again."

    def handle(self, *args, **options) -> None:
        ensure_schedules()
        self.stdout.write("Schedules are in place.")

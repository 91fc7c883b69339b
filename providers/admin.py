from django.contrib import admin  # noqa: F401  (issues 4 and 5 register Credential, Collection, ...)

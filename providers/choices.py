from django.db import models


class CredentialKind(models.TextChoices):
    LLM = "llm", "LLM provider API key"
    HTTP_BEARER = "http_bearer", "HTTP bearer token"
    HTTP_BASIC = "http_basic", "HTTP basic auth"
    HTTP_HEADER = "http_header", "HTTP custom header"
    DATABASE = "database", "Database URL"


class Provider(models.TextChoices):
    LOCAL = "local", "Local model"
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    GEMINI = "gemini", "Google Gemini"
    DEEPSEEK = "deepseek", "DeepSeek"
    OLLAMA = "ollama", "Ollama"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible endpoint"

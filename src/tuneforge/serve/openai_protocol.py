"""The OpenAI request bodies as types (/v1/chat/completions, /v1/completions), as vLLM's
``entrypoints/openai/protocol.py`` has them; the worker's OpenAPI document shows these schemas.

What depends on the model served (a prompt's length against its context, token ids against its
vocabulary, the model's name) is checked by the handlers, not here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictInt

from .params import (
    Count,
    Flag,
    NonEmpty,
    RequestModel,
    SamplingOptions,
    TopLogprobs,
    non_empty,
    refused,
    worded,
)


def unsupported(message: str) -> AfterValidator:
    """A field this server refuses when it is set (not empty, not false)."""

    def check(value):
        if value:
            raise refused(message)
        return value

    return AfterValidator(check)


NO_TOOLS = unsupported("tools and function calling are not supported by this server.")
NO_ECHO = unsupported("echo and suffix are not supported by this server.")


class TextPart(RequestModel):
    """A part of a message's content; text is the only kind served."""

    type: Literal["text"]
    text: str = ""


class ChatMessage(RequestModel):
    role: str = Field(description="system, user, assistant, … as the model's chat template knows them.")
    content: Annotated[
        str | list[TextPart] | None,
        worded(
            lambda value: (
                "{field}: only text parts are supported."
                if isinstance(value, list)
                else "{field} must be a string or a list of parts."
            )
        ),
    ] = Field(None, description="Text, or a list of text parts.")

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(RequestModel):
    include_usage: Flag = Field(False, description="A last chunk with the usage of the whole request.")


class _OpenAIRequest(SamplingOptions):
    model: str | None = Field(None, description="A served model's id (GET /v1/models).")
    n: Count = Field(1, description="Answers to generate for each prompt.")
    stream: Flag = Field(False, description="Answer as server-sent events.")
    stream_options: StreamOptions | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_OpenAIRequest):
    messages: Annotated[
        list[ChatMessage], non_empty("messages must be a non-empty list of {role, content} objects.")
    ] = Field(description="The conversation, rendered by the model's own chat template.")
    logprobs: Flag = Field(False, description="Return each token's log probability.")
    top_logprobs: TopLogprobs | None = Field(None, description="With logprobs: the k likeliest tokens too.")
    tools: Annotated[list[Any] | None, NO_TOOLS] = Field(None, description="Not supported: refused if set.")
    functions: Annotated[list[Any] | None, NO_TOOLS] = Field(None, description="Not supported either.")


class CompletionRequest(_OpenAIRequest):
    prompt: Annotated[
        str | NonEmpty[str] | NonEmpty[StrictInt] | NonEmpty[list[StrictInt]],
        Field(union_mode="left_to_right"),
        worded("prompt must be a string, a list of strings or a list of token ids."),
    ] = Field(description="A string, a list of strings, a list of token ids or a list of those lists.")
    logprobs: TopLogprobs | None = Field(None, description="Return the log probabilities of the k likeliest.")
    echo: Annotated[Flag, NO_ECHO] = Field(False, description="Not supported: refused when true.")
    suffix: Annotated[str | None, NO_ECHO] = Field(None, description="Not supported: refused if set.")

    def prompts(self) -> list[str] | list[list[int]]:
        """The prompts as a list: of texts, or of token id lists."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):
            return [self.prompt]
        return self.prompt

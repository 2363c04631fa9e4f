"""The Gemini adapter: OpenAI chat requests to ``generateContent`` and back.

System messages become ``systemInstruction``, the assistant is the ``model``
role, tool calls and results are ``functionCall`` and ``functionResponse``
parts; streams use ``streamGenerateContent?alt=sse``. A prompt Gemini blocks
comes back as a 200 without candidates, which is a CONTENT_POLICY error here.

Not carried: the ``thoughtSignature`` Gemini attaches to function calls of
thinking models, which the OpenAI shape has no place for; models that require
it echoed back reject a conversation that continues after a tool call, until
the signature is carried in the tool call (for instance inside its id).
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from penin.router.errors import ErrorKind
from penin.router.providers import _chat
from penin.router.providers._http import (
    Decoder,
    EventStream,
    HttpProvider,
    checked_usage,
    status_kind,
)
from penin.router.providers.base import Completion, Json, Stream, Usage

MAX_MODEL_PAGES = 20
FILTERED = "content_filter"
FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": FILTERED,
    "RECITATION": FILTERED,
    "PROHIBITED_CONTENT": FILTERED,
    "BLOCKLIST": FILTERED,
    "SPII": FILTERED,
    "IMAGE_SAFETY": FILTERED,
}
CONTEXT_PHRASES = ("exceeds the maximum number of tokens", "input token count")
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


class GeminiProvider(HttpProvider):
    """``{base_url}/v1beta/models/{model}:generateContent``; the key is a header."""

    @property
    def root(self) -> str:
        base = self.config.base_url.rstrip("/")

        return base if base.endswith(("/v1beta", "/v1")) else f"{base}/v1beta"

    def headers(self) -> dict[str, str]:
        # A header rather than ?key=, so that the key is in no URL or error.
        return {"x-goog-api-key": self.api_key}

    def error_kind(self, status: int | None, error: Json) -> ErrorKind:
        code = error.get("code")
        kind = status_kind(status or (code if isinstance(code, int) else 500))
        if kind is not ErrorKind.BAD_REQUEST:
            return kind
        message = str(error.get("message") or "").lower()
        if any(phrase in message for phrase in CONTEXT_PHRASES):
            return ErrorKind.CONTEXT_LENGTH
        # A wrong key is a 400 with this reason, not a 401.
        reasons = {d.get("reason") for d in _details(error)}
        if "API_KEY_INVALID" in reasons:
            return ErrorKind.AUTH

        return kind

    def retry_delay(self, error: Json) -> float | None:
        for detail in _details(error):
            delay = str(detail.get("retryDelay") or "")
            if detail.get("@type") == RETRY_INFO and delay.endswith("s"):
                try:
                    return max(float(delay[:-1]), 0.0)
                except ValueError:
                    return None

        return None

    async def complete(self, model: str, request: Json) -> Completion:
        with self.translating():
            body = content_request(request)
        url = f"{self.root}/models/{_bare(model)}:generateContent"
        answer = await self.call("POST", url, body)
        if "error" in answer and "candidates" not in answer:
            raise self.in_band(answer["error"])
        candidate = self.candidate(answer)
        with self.reading("the generated content"):
            return self._completion(model, answer, candidate)

    def stream(self, model: str, request: Json) -> Stream:
        with self.translating():
            body = content_request(request)
        url = f"{self.root}/models/{_bare(model)}:streamGenerateContent?alt=sse"

        return EventStream(self, url, body, _Events(self, model))

    async def list_models(self) -> list[str]:
        names: list[str] = []
        query = {"pageSize": "1000"}
        for _ in range(MAX_MODEL_PAGES):
            page = await self.call("GET", f"{self.root}/models?{urlencode(query)}")
            with self.reading("the model list"):
                names += [_bare(str(m["name"])) for m in page.get("models") or []]
                if not page.get("nextPageToken"):
                    break
                query["pageToken"] = str(page["nextPageToken"])

        return names

    def candidate(self, answer: Json) -> Json | None:
        """The first candidate; None for an event that carries only usage."""
        candidates = answer.get("candidates")
        if candidates:
            with self.reading("the candidates"):
                return dict(candidates[0])
        feedback = answer.get("promptFeedback")
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if reason:
            raise self.error(
                ErrorKind.CONTENT_POLICY, f"Gemini blocked the prompt: {reason}"
            )

        return None

    def _completion(
        self, model: str, answer: Json, candidate: Json | None
    ) -> Completion:
        if candidate is None:
            raise ValueError("the answer has no candidates")
        text, calls = _said(candidate)
        usage = usage_of(self.name, answer.get("usageMetadata"))
        body = _chat.completion(
            str(answer.get("responseId") or _chat.new_id("chatcmpl")),
            str(answer.get("modelVersion") or model),
            int(time.time()),
            _chat.assistant(text, calls),
            _finish(candidate.get("finishReason"), bool(calls)),
            usage,
        )

        return Completion(body, usage)


def usage_of(provider: str, metadata: object) -> Usage | None:
    """Usage from ``usageMetadata``; thinking tokens are output, as they are billed.

    Gemini leaves counts of zero out of its JSON, so a missing count is 0.
    """
    if not isinstance(metadata, dict):
        return None
    prompt = _sum(metadata, "promptTokenCount", "toolUsePromptTokenCount")
    completion = _sum(metadata, "candidatesTokenCount", "thoughtsTokenCount")

    return checked_usage(provider, prompt, completion, metadata.get("totalTokenCount"))


def _sum(metadata: Json, *names: str) -> object:
    """The sum of counts, or the first that is not a count, for usage to reject."""
    values = [metadata.get(name, 0) for name in names]
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return value

    return sum(values)


def _said(candidate: Json) -> tuple[str, list[Json]]:
    """The text and the tool calls of a candidate; thoughts are left out."""
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(
        str(p["text"]) for p in parts if "text" in p and not p.get("thought")
    )
    calls = [
        _chat.tool_call(
            str(p["functionCall"].get("id") or _chat.new_id("call")),
            str(p["functionCall"]["name"]),
            p["functionCall"].get("args") or {},
        )
        for p in parts
        if "functionCall" in p
    ]

    return text, calls


def _finish(reason: object, called: bool) -> str:
    # Gemini ends a turn that calls a function with STOP.
    finish = FINISH.get(str(reason), "stop")

    return "tool_calls" if called and finish == "stop" else finish


def _details(error: Json) -> list[Json]:
    details = error.get("details")

    return (
        [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []
    )


def _bare(model: str) -> str:
    return model.removeprefix("models/")


# -- the request -----------------------------------------------------------------


def content_request(request: Json) -> Json:
    """The generateContent body for an OpenAI chat request."""
    system, contents = _contents(request["messages"])
    body: Json = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    declarations = [_declaration(f) for f in _chat.functions(request)]
    if declarations:
        body["tools"] = [{"functionDeclarations": declarations}]
        choice = request.get("tool_choice")
        if choice is not None:
            body["toolConfig"] = {"functionCallingConfig": _calling(choice)}
    config = _generation(request)
    if config:
        body["generationConfig"] = config

    return body


def _generation(request: Json) -> Json:
    config: Json = {}
    limit = _chat.max_tokens(request)
    if limit is not None:
        config["maxOutputTokens"] = limit
    for theirs, ours in (("temperature", "temperature"), ("top_p", "topP")):
        if request.get(theirs) is not None:
            config[ours] = request[theirs]
    stops = _chat.stop_sequences(request)
    if stops:
        config["stopSequences"] = stops

    return config


def _contents(messages: list[Json]) -> tuple[str, list[Json]]:
    system: list[str] = []
    contents: list[Json] = []
    called: dict[str, str] = {}  # tool call id -> function name, for the results
    for message in messages:
        role = message["role"]
        if role in {"system", "developer"}:
            system.append(_chat.text_of(message.get("content")))
            continue
        parts = _parts(role, message, called)
        if not parts:
            continue
        speaker = "model" if role == "assistant" else "user"
        if contents and contents[-1]["role"] == speaker:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": speaker, "parts": parts})

    return "\n\n".join(text for text in system if text), contents


def _parts(role: str, message: Json, called: dict[str, str]) -> list[Json]:
    content = message.get("content")
    if role == "user":
        return [_part(p) for p in _chat.parts_of(content)]
    if role == "assistant":
        text = _chat.text_of(content)
        parts: list[Json] = [{"text": text}] if text else []
        for call in message.get("tool_calls") or []:
            name = str(call["function"]["name"])
            called[str(call["id"])] = name
            parts.append(
                {"functionCall": {"name": name, "args": _chat.arguments(call)}}
            )
        return parts
    if role == "tool":
        answered = called.get(str(message.get("tool_call_id"))) or message.get("name")
        if not isinstance(answered, str) or not answered:
            raise ValueError("a tool message answers no tool call of the conversation")
        response = {"name": answered, "response": _result(_chat.text_of(content))}
        return [{"functionResponse": response}]
    raise ValueError(f"messages of role {role!r} cannot be sent to Gemini")


def _result(text: str) -> Json:
    """A tool's result as the object Gemini wants: itself if it is one, else wrapped."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text

    return value if isinstance(value, dict) else {"content": value}


def _part(part: Json) -> Json:
    if part["type"] == "text":
        return {"text": str(part["text"])}
    if part["type"] == "image_url":
        inline = _chat.data_url(_chat.image_url(part))
        if inline is None:
            # Gemini fetches no URLs; fileData would need an uploaded file's URI.
            raise ValueError("images must be sent to Gemini as data: URLs")
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    raise ValueError(f"content parts of type {part['type']!r} cannot be sent")


def _declaration(function: Json) -> Json:
    declaration: Json = {"name": function["name"]}
    for name in ("description", "parameters"):
        if function.get(name):
            declaration[name] = function[name]

    return declaration


def _calling(choice: object) -> Json:
    if isinstance(choice, str) and choice in TOOL_MODES:
        return {"mode": TOOL_MODES[choice]}
    if isinstance(choice, dict):
        return {"mode": "ANY", "allowedFunctionNames": [_chat.chosen_function(choice)]}
    raise ValueError(f"tool_choice {choice!r} is not one OpenAI defines")


# -- the stream ------------------------------------------------------------------


class _Events(Decoder):
    """Each event is a whole response of a few words; the one with a finish ends it."""

    def __init__(self, provider: GeminiProvider, model: str) -> None:
        self._provider = provider
        self._model = model
        self._chunks: _chat.Chunks | None = None
        self._calls = 0

    def feed(self, event: str, data: str) -> list[Json]:
        answer = json.loads(data)
        if "error" in answer and "candidates" not in answer:
            raise self._provider.in_band(answer["error"])
        if answer.get("usageMetadata") is not None:
            self.usage = usage_of(self._provider.name, answer["usageMetadata"])
        candidate = self._provider.candidate(answer)
        if candidate is None:
            return []
        text, calls = _said(candidate)
        delta: Json = {}
        if self._chunks is None:
            ident = str(answer.get("responseId") or _chat.new_id("chatcmpl"))
            model = str(answer.get("modelVersion") or self._model)
            self._chunks = _chat.Chunks(ident, model, int(time.time()))
            delta["role"] = "assistant"
        if text:
            delta["content"] = text
        if calls:
            delta["tool_calls"] = [
                {"index": self._calls + n, **call} for n, call in enumerate(calls)
            ]
            self._calls += len(calls)
        chunks = [self._chunks.delta(delta)] if delta else []
        reason = candidate.get("finishReason")
        if reason and reason != "FINISH_REASON_UNSPECIFIED":
            self.finished = True
            chunks.append(self._chunks.delta({}, _finish(reason, self._calls > 0)))

        return chunks

    def end(self) -> list[Json]:
        if self._chunks is None or self.usage is None:
            return []

        return [self._chunks.usage(self.usage)]

"""The LLM layer: grounded reranking, explanations and conversational recommendation.

Everything works over any OpenAI-compatible chat-completions endpoint through the
:class:`LLMClient` protocol, and everything except LLM phrasing also works with no LLM at all
(template explanations, embedding-based critique parsing, the template simulated user).

The catalogue, the matcher of output strings, the grounding checker of explanations and the
risk rates are those of the holistic evaluation (:mod:`genrec.evaluation.catalogue`,
:mod:`genrec.evaluation.grounding`, :mod:`genrec.evaluation.risks`); this layer uses them.
"""

from genrec.llm.client import (
    ChatMessage,
    ClientConfig,
    Completion,
    LLMClient,
    LLMError,
    OpenAIClient,
    ResponseCache,
    TokenUsage,
)
from genrec.llm.conversation import (
    ConversationalRecommender,
    ConversationConfig,
    Reply,
    Session,
    SessionState,
)
from genrec.llm.critique import Critique, CritiqueParser
from genrec.text.encoders import (
    HashingEncoder,
    SentenceEncoder,
    TextEncoder,
    default_encoder,
    encode_cached,
)
from genrec.llm.explain import ExplainConfig, Explainer, Explanation
from genrec.llm.parsing import parse_json_object, parse_list
from genrec.llm.rerank import LLMReranker, RerankConfig, RerankResult, RerankStats
from genrec.llm.simulator import SimulatedUser, SimulationConfig, simulate

__all__ = [
    "ChatMessage",
    "ClientConfig",
    "Completion",
    "ConversationConfig",
    "ConversationalRecommender",
    "Critique",
    "CritiqueParser",
    "ExplainConfig",
    "Explainer",
    "Explanation",
    "HashingEncoder",
    "LLMClient",
    "LLMError",
    "LLMReranker",
    "OpenAIClient",
    "Reply",
    "RerankConfig",
    "RerankResult",
    "RerankStats",
    "ResponseCache",
    "SentenceEncoder",
    "Session",
    "SessionState",
    "SimulatedUser",
    "SimulationConfig",
    "TextEncoder",
    "TokenUsage",
    "default_encoder",
    "encode_cached",
    "parse_json_object",
    "parse_list",
    "simulate",
]

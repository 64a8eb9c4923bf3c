"""The knowledge token count: exactly o200k_base (``bpe-openai``, its vocabulary in its wheel).

Checked against references read offline: OpenAI's cl100k_base and o200k_base (tiktoken), Anthropic's
legacy tokenizer and DeepSeek-V3's (Hugging Face ``tokenizers``), whose vocabularies come bundled in
the ``litellm`` wheel; ``bash scripts/install.sh --test`` installs all three, and those comparisons
fail (not skip) without them. Targets (issue 11): ordinary English at most 1.6 tokens a word;
200,000 characters counted in at most 50 ms; nothing downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from avatar_server.catalog.tokens import ENCODING, count_tokens
from avatar_server.models.documents import DOCUMENT_CONTENT_MAX

ENGLISH = """\
Our return policy is simple. If you are not completely satisfied with your purchase, you can
return it within 30 days of delivery for a full refund. Items must be unused, in their original
packaging, and accompanied by the receipt. Once we receive the returned item, our team will
inspect it and process your refund within five to seven business days. Shipping costs are
non-refundable unless the item arrived damaged or we made a mistake with your order. For
exchanges, please contact customer support at support@example.com or call +1 (555) 010-2030
between 9:00 a.m. and 5:30 p.m., Monday through Friday. We're happy to help!
"""

MARKDOWN = """\
# Product FAQ

## How do I reset my password?

1. Open **Settings** → *Account*.
2. Click `Reset password` and follow the link we e-mail you (valid for 24 hours).

> Tip: use a password manager; never reuse passwords across sites.

| Plan     | Price/month | Seats |
|----------|-------------|-------|
| Starter  | $9.99       | 3     |
| Team     | $49.00      | 25    |

See [the docs](https://docs.example.com/account#reset) for details.
"""

PYTHON = '''\
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    """Token bucket: `rate` tokens per second, bursts up to `capacity`."""

    rate: float
    capacity: int = 10
    _tokens: float = field(default=0.0, init=False)

    async def acquire(self, n: int = 1) -> None:
        while self._tokens < n:
            await asyncio.sleep((n - self._tokens) / self.rate)
            self._tokens = min(self.capacity, self._tokens + self.rate * 0.1)
        self._tokens -= n  # TODO(perf): avoid float drift on 0x7fffffff calls
'''

JAVASCRIPT = """\
export async function fetchAvatars(baseUrl, {limit = 50, cursor} = {}) {
  const params = new URLSearchParams({limit: String(limit)});
  if (cursor) params.set('cursor', cursor);
  const res = await fetch(`${baseUrl}/v1/avatars?${params}`, {headers: {'X-Runway-Version': '2024-11-06'}});
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const {data, hasMore, nextCursor} = await res.json();
  return data.map((a) => ({...a, ready: a.status === 'READY'})).concat(hasMore ? [nextCursor] : []);
}
"""

JSON = """\
{"id": "3f2b8c1e-9a7d-4e6f-b5c4-1d2e3f4a5b6c", "name": "Support bot", "status": "READY",
 "voice": {"type": "runway-live-preset", "presetId": "adrian"}, "documentIds": [],
 "createdAt": "2025-01-31T12:34:56.789Z", "metrics": [0.125, 3.5e-4, 1024, -17, 65535]}
"""

CHINESE = """\
我们的退货政策很简单。如果您对所购买的商品不完全满意，可以在收货后三十天内申请退货并获得全额退款。
商品必须未经使用，保持原包装，并附有购物凭证。收到退回的商品后，我们的团队会进行检查，并在五到七个工作日内处理退款。
除非商品在运输途中损坏或我们发错了货，否则运费不予退还。如需换货，请在周一至周五上午九点到下午五点半之间联系客服。
"""

JAPANESE = """\
当店の返品ポリシーはシンプルです。ご購入いただいた商品にご満足いただけない場合は、お届けから30日以内であれば全額返金いたします。
商品は未使用で、元の梱包のまま、領収書を添えてご返送ください。返品を受け取り次第、担当チームが確認し、5〜7営業日以内に返金手続きを行います。
ご不明な点がございましたら、カスタマーサポートまでお気軽にお問い合わせください。
"""

KOREAN = """\
저희 반품 정책은 간단합니다. 구매하신 상품에 만족하지 못하신 경우, 배송일로부터 30일 이내에 반품하시면 전액 환불해 드립니다.
상품은 사용하지 않은 상태로 원래 포장에 담아 영수증과 함께 보내 주셔야 합니다. 반품된 상품을 받으면 저희 팀이 검수한 후
영업일 기준 5~7일 이내에 환불을 처리해 드립니다. 궁금한 점이 있으시면 고객 지원팀에 문의해 주세요.
"""

RUSSIAN = """\
Наша политика возврата проста. Если вы не полностью удовлетворены покупкой, вы можете вернуть товар
в течение 30 дней с момента доставки и получить полный возврат средств. Товар должен быть неиспользованным,
в оригинальной упаковке и с чеком. После получения возврата наша команда проверит товар и оформит возврат
денег в течение пяти–семи рабочих дней. Стоимость доставки не возвращается, если товар не был повреждён.
"""

ARABIC = """\
سياسة الإرجاع لدينا بسيطة. إذا لم تكن راضيًا تمامًا عن مشترياتك، يمكنك إرجاعها خلال ثلاثين يومًا من
تاريخ التسليم واسترداد كامل المبلغ. يجب أن تكون المنتجات غير مستخدمة وفي عبوتها الأصلية ومرفقة بالإيصال.
بعد استلام المنتج المرتجع، سيقوم فريقنا بفحصه ومعالجة المبلغ المسترد خلال خمسة إلى سبعة أيام عمل.
"""

HEBREW = """\
מדיניות ההחזרות שלנו פשוטה. אם אינכם מרוצים לחלוטין מהרכישה, ניתן להחזיר את המוצר תוך 30 יום ממועד
המסירה ולקבל החזר כספי מלא. המוצר חייב להיות לא משומש, באריזתו המקורית ומלווה בקבלה.
"""

HINDI = """\
हमारी वापसी नीति सरल है। यदि आप अपनी खरीद से पूरी तरह संतुष्ट नहीं हैं, तो आप डिलीवरी के 30 दिनों के भीतर
सामान वापस कर सकते हैं और पूरा पैसा वापस पा सकते हैं। सामान अप्रयुक्त, मूल पैकेजिंग में और रसीद के साथ होना चाहिए।
"""

GREEK = """\
Η πολιτική επιστροφών μας είναι απλή. Εάν δεν είστε απόλυτα ικανοποιημένοι με την αγορά σας, μπορείτε
να την επιστρέψετε εντός 30 ημερών από την παράδοση και να λάβετε πλήρη επιστροφή χρημάτων.
"""

THAI = """\
นโยบายการคืนสินค้าของเราเรียบง่าย หากคุณไม่พอใจกับสินค้าที่ซื้อ คุณสามารถคืนสินค้าได้ภายใน 30 วันนับจากวันที่ได้รับสินค้า
และรับเงินคืนเต็มจำนวน สินค้าต้องไม่ผ่านการใช้งาน อยู่ในบรรจุภัณฑ์เดิม และมีใบเสร็จแนบมาด้วย
"""

GEORGIAN = """\
ჩვენი დაბრუნების პოლიტიკა მარტივია. თუ შეძენილი ნივთით სრულად კმაყოფილი არ ხართ, შეგიძლიათ დააბრუნოთ
იგი მიწოდებიდან 30 დღის განმავლობაში და მიიღოთ თანხის სრული ანაზღაურება.
"""

VIETNAMESE = """\
Chính sách đổi trả của chúng tôi rất đơn giản. Nếu bạn không hoàn toàn hài lòng với sản phẩm đã mua, bạn có thể
trả lại trong vòng 30 ngày kể từ ngày giao hàng và được hoàn tiền đầy đủ. Sản phẩm phải chưa qua sử dụng.
"""

GERMAN = """\
Unsere Rückgaberichtlinie ist einfach: Wenn Sie mit Ihrem Kauf nicht vollständig zufrieden sind, können Sie
die Ware innerhalb von 30 Tagen nach Lieferung zurückgeben und erhalten den vollen Kaufpreis zurück. Größere
Geräte müssen in der Originalverpackung zurückgeschickt werden; Versandkosten werden nicht erstattet.
"""

TURKISH = """\
İade politikamız basittir. Satın aldığınız üründen tamamen memnun kalmazsanız, teslimattan itibaren 30 gün
içinde ürünü iade edebilir ve ödediğiniz ücretin tamamını geri alabilirsiniz. Ürün kullanılmamış olmalıdır.
"""

EMOJI_CHAT = """\
Thanks so much!! 🙏🙏 The new avatar looks amazing 😍🔥 — can't wait to show the team 🎉🎉🎉
👩‍💻👨‍👩‍👧‍👦 🇯🇵🇫🇷 ✅❌⚠️ ★☆ → ← ∑∫√ ¯\\_(ツ)_/¯ «quotes» “curly” ‘single’ … – —
"""

MIXED = """\
Support hours / 营业时间 / Часы работы / ساعات العمل: 09:00–17:30 (UTC+9). Contact: サポート@example.jp 📞 +81-3-1234-5678.
Order #A7F3-99K2: 3× Widget™ @ €12.50 = €37.50 (incl. 19 % MwSt.) ✔
"""


def _random_samples() -> dict[str, str]:
    rng = random.Random(20250131)
    alnum = string.ascii_letters + string.digits

    def rand(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    return {
        "uuids": "\n".join(
            f"{rand('0123456789abcdef', 8)}-{rand('0123456789abcdef', 4)}-4{rand('0123456789abcdef', 3)}-"
            f"a{rand('0123456789abcdef', 3)}-{rand('0123456789abcdef', 12)}"
            for _ in range(40)
        ),
        "base64": "\n".join(rand(alnum + "+/", 76) for _ in range(30)),
        "hex": " ".join(rand("0123456789abcdef", 64) for _ in range(30)),
        "api_keys": " ".join(f"key_{rand(alnum, 40)}" for _ in range(40)),
        "random_words": " ".join(rand(string.ascii_lowercase, rng.randint(2, 14)) for _ in range(400)),
        "numbers": " ".join(str(rng.randint(0, 10 ** rng.randint(1, 12))) for _ in range(400)),
        "punctuation": " ".join(rand(string.punctuation, rng.randint(1, 6)) for _ in range(300)),
        "indented": "\n".join(" " * rng.randint(0, 24) + rand(string.ascii_lowercase, 5) for _ in range(200)),
    }


# Text built to slip under a weighted estimate: every piece a pre-tokenizer cuts costs a token.
ADVERSARIAL = {
    "control_chars": "\x01" * 2000 + "ab\x02" * 300 + "\x7f" * 500,
    "c1_controls": "\x85\x9f" * 500,
    "crlf_lines": "a\r\n" * 600,
    "one_letter_lines": "a\n" * 800 + "- A\n" * 400,
    "digit_list": " ".join("7" for _ in range(900)),
    "accented_run": "é" * 900 + "éàüñøß" * 100 + "©" * 300,
    "digit_table": "\n".join("| 1 | 2 | 3 | 4 |" for _ in range(120)),
    "dots": "x." * 700 + ". " * 700,
}

SAMPLES: dict[str, str] = {
    "english": ENGLISH,
    "markdown": MARKDOWN,
    "python": PYTHON,
    "javascript": JAVASCRIPT,
    "json": JSON,
    "chinese": CHINESE,
    "japanese": JAPANESE,
    "korean": KOREAN,
    "russian": RUSSIAN,
    "arabic": ARABIC,
    "hebrew": HEBREW,
    "hindi": HINDI,
    "greek": GREEK,
    "thai": THAI,
    "georgian": GEORGIAN,
    "vietnamese": VIETNAMESE,
    "german": GERMAN,
    "turkish": TURKISH,
    "emoji_chat": EMOJI_CHAT,
    "mixed": MIXED,
    **_random_samples(),
    **ADVERSARIAL,
}


def _pieces(text: str) -> Iterator[str]:
    """The whole sample, then each non-empty line of it."""
    yield text
    yield from (line for line in text.splitlines() if line.strip())


# --------------------------------------------------------------------------- reference tokenizers


def _bundled_vocab_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")  # located, not imported
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    return folder if folder.is_dir() else None


def _tiktoken_counter(encoding: Any) -> Callable[[str], int]:
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def _hf_counter(tokenizer: Any) -> Callable[[str], int]:
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


@pytest.fixture(scope="module")
def reference_tokenizers() -> dict[str, Callable[[str], int]]:
    # the README's test command installs all three (scripts/install.sh --test): a failure, not a skip
    try:
        import tiktoken
        import tokenizers as hf_tokenizers
    except ImportError as exc:
        pytest.fail(f"{exc.name} is required for the reference counts (bash scripts/install.sh --test)")
    folder = _bundled_vocab_dir()
    if folder is None:
        pytest.fail("litellm (which bundles the vocabularies) is required (bash scripts/install.sh --test)")
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)  # tiktoken reads its files from here, offline
    try:
        encodings = {name: tiktoken.get_encoding(name) for name in ("cl100k_base", "o200k_base")}
    finally:
        if previous is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous
    found: dict[str, Callable[[str], int]] = {name: _tiktoken_counter(enc) for name, enc in encodings.items()}
    for name, filename in (
        ("anthropic", "anthropic_tokenizer.json"),
        ("deepseek", "deepseek_tokenizer.json"),
    ):
        found[name] = _hf_counter(hf_tokenizers.Tokenizer.from_file(str(folder / filename)))
    return found


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_the_count_is_o200k_exactly(kind: str, reference_tokenizers: dict[str, Callable[[str], int]]) -> None:
    reference = reference_tokenizers["o200k_base"]
    for piece in _pieces(SAMPLES[kind]):
        assert count_tokens(piece) == reference(piece), (kind, piece[:60])


PLAIN = """\
When you arrive at the museum, please leave large bags and umbrellas at the cloakroom near the main
entrance. Tickets can be bought at the front desk or online, and children under twelve visit for free.
The ground floor shows the history of the harbour, from the first fishing boats to the great ships that
carried coffee, cotton and timber around the world. Upstairs you will find paintings of the old town,
maps drawn by hand, and a small room where you can listen to sailors telling their own stories. Guided
tours start every hour and last about forty minutes; they are friendly, slow, and suitable for families.
If you need help, ask any member of staff wearing a blue badge. The cafe on the top floor serves soup,
sandwiches and cakes, and on clear days you can see the lighthouse from its windows. We close at five in
the afternoon, except on Thursdays, when the doors stay open until nine in the evening.
"""


@pytest.mark.parametrize("text", [PLAIN, ENGLISH, PLAIN * 50 + ENGLISH * 50])
def test_ordinary_english_is_at_most_1_6_tokens_a_word(text: str) -> None:
    words = len(text.split())
    assert count_tokens(text) <= 1.6 * words, (count_tokens(text), words)


def test_a_plain_english_vocabulary_is_counted_fairly(reference_tokenizers: dict[str, Callable[[str], int]]) -> None:
    """The issue's case: a plain English vocabulary (every distinct word of the English samples, in
    alphabetical order, as a glossary would list them) is at most 1.6 tokens a word, and no more than
    cl100k counts — where the old estimate charged 2.9 a word (1.7x cl100k)."""
    vocab = sorted({w.lower() for w in re.findall(r"[A-Za-z]+", PLAIN + ENGLISH)})
    text = " ".join(vocab)
    ours, cl100k = count_tokens(text), reference_tokenizers["cl100k_base"](text)
    assert ours <= 1.6 * len(vocab) and ours <= 1.05 * cl100k, (ours, cl100k, len(vocab))


def test_every_reference_is_within_reach(reference_tokenizers: dict[str, Callable[[str], int]]) -> None:
    """Other tokenizers count differently (the upstream's is not published: its verdict stands last,
    see test_knowledge_budget): on English prose they stay within 30 % of ours."""
    text = PLAIN * 5
    ours = count_tokens(text)
    for name, theirs in reference_tokenizers.items():
        assert 0.7 * ours <= theirs(text) <= 1.3 * ours, (name, theirs(text), ours)


def test_200_000_characters_in_at_most_50_ms() -> None:
    count_tokens("warm up")  # the vocabulary loads once per process
    for text in ((PLAIN * 300)[:DOCUMENT_CONTENT_MAX], (PYTHON * 400)[:DOCUMENT_CONTENT_MAX],
                 (CHINESE * 1500)[:DOCUMENT_CONTENT_MAX]):
        assert len(text) == DOCUMENT_CONTENT_MAX
        best = min(_timed(count_tokens, text) for _ in range(3))
        assert best <= 0.050, f"{best * 1000:.1f} ms for {DOCUMENT_CONTENT_MAX} characters"


def _timed(fn: Callable[[str], Any], text: str) -> float:
    started = time.perf_counter()
    fn(text)
    return time.perf_counter() - started


def test_empty_tiny_and_special_token_text() -> None:
    assert count_tokens("") == 0
    assert count_tokens("a") == 1
    assert count_tokens("<|endoftext|>") > 1  # ordinary text, never a special token (nor an error)
    assert count_tokens("\ud800 lone surrogate") >= 1  # JSON may carry one: counted, never an error


def test_nothing_is_downloaded(tmp_path: Path) -> None:
    """The vocabulary is in the installed package: a fresh process with every socket refused counts."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from avatar_server.catalog.tokens import count_tokens\n"
        "print(count_tokens('Hello, world! ' * 10))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "41"


def test_the_encoding_is_named() -> None:
    assert ENCODING == "o200k_base"

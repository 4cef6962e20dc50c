"""MuirBench (multi-image, test): lmms-eval's `muirbench` prompt, images and scoring; LLaDA-V's
multiple-choice decoding (2 tokens, 2 steps).

The question and options usually hold one `<image>` per image where the benchmark places them; then
upstream's wrapper adds neither placeholders nor the think tag, and the images (several: the evaluation
layout, 729 tokens each) go where the text puts them. A row whose text holds `<image>`s but not one per
image is reported (upstream would drop the extra images, or reuse the last one for the extra places).
"""

from lladav_jax.data.tokenizer import IMAGE_TEXT
from lladav_jax.eval import metrics
from lladav_jax.eval.readers import Row
from lladav_jax.eval.tasks.base import (Record, RecordError, Task, breakdown, images, lettered, mean_score, string_list,
                                        text)

POST_PROMPT = "Answer with the option's letter from the given choices directly."


class MuirBench(Task):
  name = "muirbench"
  required_columns = ("idx", "task", "question", "options", "answer", "image_list")
  description = "MuirBench (multi-image; test)"

  def record(self, row: Row, index: int) -> Record:
    question = f"{text(row, 'question')}\n{lettered(string_list(row, 'options'))}\n{POST_PROMPT}"
    pictures = images(row, "image_list")
    found = question.count(IMAGE_TEXT)
    if found and found != len(pictures):
      raise RecordError(f"{row.where('question')}: the question and options hold {found} {IMAGE_TEXT} but "
                        f"column 'image_list' has {len(pictures)} images")
    meta = {k: text(row, k, required=False) or None for k in ("task", "image_relation", "image_type")}
    return Record(index, text(row, "idx"), question, pictures, text(row, "answer"), meta)

  def score(self, record, prediction):
    # The "flexible-extract" filter ("B. ..." -> "B", else the answer as it is), then a case-blind match.
    choice = metrics.ai2d_choice(prediction)
    return {"parsed": choice, "score": float(choice.lower().strip() == record.target.lower().strip())}

  def summarize(self, results):
    # lmms-eval reports the overall accuracy and prints it per task; relation and image type are extra.
    return {"metrics": {"accuracy": mean_score(results)},
            "breakdown": {"task": breakdown(results, "task"), "image_relation": breakdown(results, "image_relation"),
                          "image_type": breakdown(results, "image_type")}}

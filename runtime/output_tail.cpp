// The last part of what a child wrote to a captured stream, bounded in size.
#include "runtime/output_tail.h"

#include "runtime/peer_text.h"

#include <cstdint>

namespace pi {

void OutputTail::append(const char* data, size_t size) {
  total_ += size;
  if (size >= capacity_) {
    kept_.assign(data + (size - capacity_), capacity_);
    return;
  }
  kept_.append(data, size);
  if (kept_.size() > capacity_ * 2) kept_.erase(0, kept_.size() - capacity_);
}

std::string OutputTail::lastLines(size_t maxLines) const {
  std::string text = kept_.size() > capacity_ ? kept_.substr(kept_.size() - capacity_) : kept_;
  if (text.size() < total_) {
    // The bytes before the kept ones are gone: do not start in the middle of a character.
    size_t lead = 0;
    while (lead < 3 && lead < text.size() && (uint8_t(text[lead]) & 0xC0) == 0x80) ++lead;
    text.erase(0, lead);
  }
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (text.empty() || maxLines == 0) return "";
  size_t at = text.size();
  for (size_t lines = 0; lines < maxLines; ++lines) {
    size_t newline = text.rfind('\n', at - 1);
    if (newline == std::string::npos) return peerText(text);
    at = newline;
    if (at == 0) break;
  }
  return peerText(std::string_view(text).substr(at + 1));
}

}  // namespace pi

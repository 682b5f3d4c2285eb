"""`python -m moderation.export {ct2,gguf} runs/<name> [--quant ...]`: entry point; the logic is inference.export."""

from inference.export import main

if __name__ == "__main__":
    main()

import sys

from emotion_pipeline.cli import main

sys.exit(main())

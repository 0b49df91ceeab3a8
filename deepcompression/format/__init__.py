"""The paper's third stage and the file it writes: Huffman coding, the sparse relative index, the
`.dcz` container (encode, decode, limits), exact file sizes and the loader back to a network."""

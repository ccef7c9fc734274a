# The part of expat that CPython's pyexpat exports through its "pyexpat.expat_CAPI" capsule
# (Include/pyexpat.h, Doc/c-api/expat.rst). Declarations only: tokenizer.pyx imports and checks
# the capsule at module init. The capsule is a subset of expat: no XML_StopParser, no byte index,
# no entity-declaration handler (see DESIGN.md).

cdef extern from "expat.h":
    ctypedef char XML_Char
    ctypedef char XML_LChar
    ctypedef unsigned char XML_Bool
    ctypedef unsigned long XML_Size   # the exact width is only used through casts
    ctypedef struct XML_ParserStruct:
        pass
    ctypedef XML_ParserStruct* XML_Parser

    enum XML_Status:
        XML_STATUS_ERROR
        XML_STATUS_OK
        XML_STATUS_SUSPENDED

    enum XML_Error:
        XML_ERROR_NONE

    ctypedef struct XML_Memory_Handling_Suite:
        pass
    ctypedef struct XML_Encoding:
        pass

    ctypedef void (*XML_StartElementHandler)(void* userData, const XML_Char* name,
                                             const XML_Char** atts)
    ctypedef void (*XML_EndElementHandler)(void* userData, const XML_Char* name)
    ctypedef void (*XML_CharacterDataHandler)(void* userData, const XML_Char* s, int len)
    ctypedef void (*XML_CommentHandler)(void* userData, const XML_Char* data)
    ctypedef void (*XML_ProcessingInstructionHandler)(void* userData, const XML_Char* target,
                                                      const XML_Char* data)
    ctypedef void (*XML_StartNamespaceDeclHandler)(void* userData, const XML_Char* prefix,
                                                   const XML_Char* uri)
    ctypedef void (*XML_EndNamespaceDeclHandler)(void* userData, const XML_Char* prefix)
    ctypedef void (*XML_StartDoctypeDeclHandler)(void* userData, const XML_Char* doctypeName,
                                                 const XML_Char* sysid, const XML_Char* pubid,
                                                 int has_internal_subset)
    ctypedef void (*XML_DefaultHandler)(void* userData, const XML_Char* s, int len)
    ctypedef int (*XML_UnknownEncodingHandler)(void* encodingHandlerData, const XML_Char* name,
                                               XML_Encoding* info)

    int XML_MAJOR_VERSION
    int XML_MINOR_VERSION
    int XML_MICRO_VERSION


cdef extern from "pyexpat.h":
    const char* PyExpat_CAPI_MAGIC
    const char* PyExpat_CAPSULE_NAME

    struct PyExpat_CAPI:
        char* magic
        int size
        int MAJOR_VERSION
        int MINOR_VERSION
        int MICRO_VERSION
        const XML_LChar* (*ErrorString)(XML_Error code)
        XML_Error (*GetErrorCode)(XML_Parser parser)
        XML_Size (*GetErrorColumnNumber)(XML_Parser parser)
        XML_Size (*GetErrorLineNumber)(XML_Parser parser)
        XML_Status (*Parse)(XML_Parser parser, const char* s, int len, int isFinal)
        XML_Parser (*ParserCreate_MM)(const XML_Char* encoding,
                                      const XML_Memory_Handling_Suite* memsuite,
                                      const XML_Char* namespaceSeparator)
        void (*ParserFree)(XML_Parser parser)
        void (*SetCharacterDataHandler)(XML_Parser parser, XML_CharacterDataHandler handler)
        void (*SetCommentHandler)(XML_Parser parser, XML_CommentHandler handler)
        void (*SetDefaultHandlerExpand)(XML_Parser parser, XML_DefaultHandler handler)
        void (*SetElementHandler)(XML_Parser parser, XML_StartElementHandler start,
                                  XML_EndElementHandler end)
        void (*SetNamespaceDeclHandler)(XML_Parser parser, XML_StartNamespaceDeclHandler start,
                                        XML_EndNamespaceDeclHandler end)
        void (*SetProcessingInstructionHandler)(XML_Parser parser,
                                                XML_ProcessingInstructionHandler handler)
        void (*SetUnknownEncodingHandler)(XML_Parser parser, XML_UnknownEncodingHandler handler,
                                          void* encodingHandlerData)
        void (*SetUserData)(XML_Parser parser, void* userData)
        void (*SetStartDoctypeDeclHandler)(XML_Parser parser, XML_StartDoctypeDeclHandler start)
        XML_Status (*SetEncoding)(XML_Parser parser, const XML_Char* encoding)
        int (*DefaultUnknownEncodingHandler)(void* encodingHandlerData, const XML_Char* name,
                                             XML_Encoding* info)
        int (*SetHashSalt)(XML_Parser parser, unsigned long hash_salt)


# SetReparseDeferralEnabled (expat >= 2.6, CVE-2023-52425) was appended to the capsule by
# cpython gh-115398 (3.8.19+, 3.9.19+, 3.10.14+, 3.11.9+, 3.12.3+) without a magic bump, so a
# module built against an older pyexpat.h can run with a newer one. We therefore do not use the
# field from pyexpat.h: a private mirror of the 1.1 layout locates it, and the capsule's own
# `size` tells whether it is there.
cdef extern from *:
    """
    #include <stddef.h>
    typedef XML_Bool (*mbx_reparse_deferral_fn)(XML_Parser, XML_Bool);
    struct mbx_expat_capi_mirror {
        char *magic;
        int size;
        int MAJOR_VERSION;
        int MINOR_VERSION;
        int MICRO_VERSION;
        void *ErrorString, *GetErrorCode, *GetErrorColumnNumber, *GetErrorLineNumber, *Parse;
        void *ParserCreate_MM, *ParserFree, *SetCharacterDataHandler, *SetCommentHandler;
        void *SetDefaultHandlerExpand, *SetElementHandler, *SetNamespaceDeclHandler;
        void *SetProcessingInstructionHandler, *SetUnknownEncodingHandler, *SetUserData;
        void *SetStartDoctypeDeclHandler, *SetEncoding, *DefaultUnknownEncodingHandler;
        void *SetHashSalt;
        mbx_reparse_deferral_fn SetReparseDeferralEnabled;
    };
    /* The mirror must agree with the header we were built against up to SetHashSalt. */
    typedef char mbx_capi_layout_check[
        (offsetof(struct mbx_expat_capi_mirror, SetHashSalt)
         == offsetof(struct PyExpat_CAPI, SetHashSalt)) ? 1 : -1];

    static mbx_reparse_deferral_fn mbx_capi_reparse_deferral(struct PyExpat_CAPI *capi) {
        size_t off = offsetof(struct mbx_expat_capi_mirror, SetReparseDeferralEnabled);
        if (capi->size < 0 || (size_t)capi->size < off + sizeof(mbx_reparse_deferral_fn))
            return NULL;
        return ((struct mbx_expat_capi_mirror *)capi)->SetReparseDeferralEnabled;
    }
    """
    ctypedef XML_Bool (*mbx_reparse_deferral_fn)(XML_Parser, XML_Bool)
    mbx_reparse_deferral_fn mbx_capi_reparse_deferral(PyExpat_CAPI* capi)
